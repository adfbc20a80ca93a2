"""The ``flux-async`` help texts: the epilog and each command's description."""

from __future__ import annotations

from .common import PROG

__all__ = ["BATCH_HELP", "EPILOG", "GENERATE_HELP", "WORKER_HELP"]

EPILOG = f"""\
Try it with no key and no network:
  {PROG} generate "a red fox in the snow" --provider fake --aspect-ratio 16:9 --out out/
  printf 'a red fox\\na lighthouse at dusk\\n' | {PROG} batch - --provider fake --out out/

Spread a batch over worker processes on several machines through Redis:
  {PROG} worker --redis redis://HOST:6379/0 --provider piapi --out images/
  {PROG} batch prompts.txt --redis redis://HOST:6379/0

API keys are read from SHORTAPI_KEY, PIAPI_KEY or AIMLAPI_KEY.
Exit status: 0 all succeeded, 1 something failed or was rejected or skipped,
2 usage or input error (nothing was sent), 130 interrupted.
"""


GENERATE_HELP = f"""\
Generate from one prompt and print the image URLs, one per line (then the saved
files, with --out). The parameters and --out are checked before anything is sent.

examples:
  {PROG} generate "a red fox" --provider fake --aspect-ratio 16:9 --num-images 2 --out out/
  {PROG} generate "a red fox" --provider piapi --timeout 120
"""

BATCH_HELP = f"""\
Generate from every line of FILE ('-' reads standard input), many jobs at once;
save the images in --out and write a manifest with one JSON line per input line:
  {{"index", "line", "prompt", "status", "job_id", "image_urls", "files", "cost",
   "error"}}

FILE holds one prompt per line, or one JSON request per line (JSONL: a name
ending in .jsonl, or every line a JSON object): "prompt" and any of image_url,
aspect_ratio, width, height, num_images, seed, steps, guidance, strength, model,
extra. Lines are stripped; blank lines and lines starting with # are skipped.
A bad line is "rejected", shown on stderr, and the batch goes on. Ctrl-C stops
cleanly: cancelled and unstarted lines are recorded too (twice: stop at once), the
provider ids of the jobs left in flight are in the journal, and --resume goes on.
From Python, flux_async.read_prompts(FILE) reads a file the same way.

examples:
  printf 'a red fox\\n# a comment\\na lighthouse\\n' | {PROG} batch - --provider fake
  echo '{{"prompt": "a red fox", "num_images": 2}}' | {PROG} batch - --provider fake
  {PROG} batch prompts.txt --provider piapi --budget 5 --price-per-job 0.02
  {PROG} batch prompts.txt --out run1/            # stopped by Ctrl-C or a crash...
  {PROG} batch prompts.txt --out run1/ --resume   # ...goes on; nothing is paid twice

over several workers (Redis; pip install 'flux-async[redis]'):
  {PROG} worker --redis redis://localhost:6379/0 --provider piapi --out images/  # each machine
  {PROG} batch prompts.txt --redis redis://localhost:6379/0     # queue, collect the manifest
  {PROG} batch prompts.txt --redis redis://localhost:6379/0     # again: only collects
"""

WORKER_HELP = f"""\
Take inputs of the batches queued on Redis ('{PROG} batch FILE --redis URL') and
generate them, saving the images in --out; each outcome goes back to Redis for the
batch's manifest. Run any number of workers, on any machines, with the same --redis
and provider account: each input is created at most once, whichever worker takes it.
A worker that dies (kill -9, a crash) leaves its inputs to the others once they were
idle for --min-idle seconds: its accepted jobs are followed by their provider ids,
never created again; a create it had on the wire ends 'unknown'.

Ctrl-C (or SIGTERM) stops taking inputs and finishes the ones in hand; a second Ctrl-C
stops at once and leaves them to the other workers. With --exit-when-idle the worker
also stops once nothing was queued or in hand anywhere for that long.
The Redis URL may hold a password; it is never printed. With --provider fake each
worker runs a fake of its own (a demo): an input taken over from another worker's fake
then ends 'unknown', as that fake's jobs cannot be followed.

examples:
  {PROG} worker --redis redis://localhost:6379/0 --provider piapi --out images/
  {PROG} worker --redis redis://localhost:6379/0 --provider fake --exit-when-idle 5
  {PROG} worker --redis redis://queue.internal:6379/0 --namespace team-a \\
      --provider shortapi --concurrency 128 --shared-creates-per-second 10 \\
      --shared-jobs-in-flight 256

exit status: 0 stopped (idle, or SIGTERM), 1 Redis was lost, 2 usage error, 130 Ctrl-C.
"""
