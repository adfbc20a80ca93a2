"""`flux_async.read_prompts`: prompt files read the way ``flux-async batch`` reads them."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from flux_async import (
    FluxClient,
    GenerationRequest,
    PollPolicy,
    PromptLine,
    ShortAPI,
    ValidationError,
    read_prompts,
)
from flux_async.testing import FakeProvider

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", newline="")
    else:
        path.write_bytes(content)
    return path


def test_text_lines_are_stripped_and_comments_and_blanks_skipped(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "p.txt", "\ufeff# a comment\r\n  a red fox  \r\n\r\n\t\n   # indented\nfox #2\n"
    )
    with read_prompts(path) as prompts:
        assert prompts.format == "text" and prompts.count == 2
        assert list(prompts) == ["a red fox", "fox #2"]
        assert list(prompts.lines()) == [
            PromptLine(2, "a red fox", "a red fox"),
            PromptLine(6, "fox #2", "fox #2"),
        ]
        # It can be read again.
        assert list(prompts) == ["a red fox", "fox #2"]


def test_the_example_file(tmp_path: Path) -> None:
    with read_prompts(EXAMPLES / "prompts.txt") as prompts:
        items = list(prompts)
    lines = (EXAMPLES / "prompts.txt").read_text(encoding="utf-8").splitlines()
    expected = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert items == expected and len(items) == 20
    assert all(isinstance(item, str) and item == item.strip() for item in items)


def test_jsonl_is_detected_when_every_line_is_an_object(tmp_path: Path) -> None:
    text = '# c\n{"prompt": " a fox ", "seed": 3}\n\n{"prompt": "b"}\n'
    path = _write(tmp_path, "requests", text)
    with read_prompts(path) as prompts:
        assert prompts.format == "jsonl" and prompts.count == 2
        assert list(prompts) == [{"prompt": "a fox", "seed": 3}, {"prompt": "b"}]


@pytest.mark.parametrize(
    "content",
    [
        '{"prompt": "a fox"}\na plain prompt\n',  # one line is not JSON
        "{curly} on a sign\n",  # starts with a brace, is not JSON
        '{"prompt": "a"}\n["an", "array"]\n',  # JSON, but not an object
    ],
)
def test_a_text_file_starting_with_a_brace_stays_text(tmp_path: Path, content: str) -> None:
    with read_prompts(_write(tmp_path, "p.txt", content)) as prompts:
        assert prompts.format == "text"
        assert list(prompts) == content.splitlines()


def test_the_jsonl_suffix_or_format_forces_jsonl(tmp_path: Path) -> None:
    path = _write(tmp_path, "r.JSONL", '{"prompt": "a"}\nnot json\n{"nope": 1}\n{"prompt": 1}\n')
    with read_prompts(path) as prompts:
        assert prompts.format == "jsonl"
        lines = list(prompts.lines())
        assert [line.item for line in lines] == [{"prompt": "a"}, None, None, None]
        assert lines[1].problem is not None and lines[1].problem.startswith(
            "line 2: not valid JSON: "
        )
        assert lines[2].problem == 'line 3: missing "prompt"'
        assert lines[3].problem == 'line 4: "prompt" must be a non-empty string'
        with pytest.raises(ValidationError, match=r"r\.JSONL line 2: not valid JSON"):
            list(prompts)
    with read_prompts(_write(tmp_path, "r.txt", '{"prompt": "a"}\n'), format="text") as prompts:
        assert list(prompts) == ['{"prompt": "a"}']


def test_jsonl_keys_are_the_request_fields(tmp_path: Path) -> None:
    path = _write(tmp_path, "r.jsonl", '{"prompt": "a", "colour": "red"}\n')
    with read_prompts(path) as prompts:
        (line,) = prompts.lines()
    assert line.item is None and line.prompt == "a"
    assert line.problem is not None and "unknown field 'colour'" in line.problem
    for field in GenerationRequest.__struct_fields__:
        assert field in line.problem


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "line 1 is not valid UTF-8"),
        (b"a fox\n\xff\xd8\xff\xe0 jpeg\n", "line 2 is not valid UTF-8"),
        (b"a fox\n\n# x\nan\x00other\n", "line 4 has a NUL byte"),
    ],
    ids=["png", "jpeg", "nul"],
)
def test_a_file_that_is_not_text_is_refused_when_opened(
    tmp_path: Path, content: bytes, why: str
) -> None:
    path = _write(tmp_path, "image.png", content)
    with pytest.raises(ValidationError) as caught:
        read_prompts(path)
    assert str(caught.value).startswith(f"{path} is not a text file: {why}")


def test_streams_text_and_binary(tmp_path: Path) -> None:
    class Pipe(io.RawIOBase):
        """A stream that cannot seek, like stdin from a pipe."""

        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            return self._data.readinto(buffer)

    pipe = io.BufferedReader(Pipe(b"# c\n a \nb\n"))
    with read_prompts(pipe) as prompts:
        assert prompts.count == 2 and list(prompts) == ["a", "b"]
    with open(_write(tmp_path, "r.jsonl", '{"prompt": "x"}\n'), encoding="utf-8") as file:
        with read_prompts(file) as prompts:
            assert prompts.format == "jsonl" and list(prompts) == [{"prompt": "x"}]
    with pytest.raises(ValidationError, match="is not a text file"):
        read_prompts(io.BytesIO(b"a\x00b\n"))


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="format must be"):
        read_prompts(_write(tmp_path, "p.txt", "a\n"), format="csv")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        read_prompts(tmp_path / "missing.txt")


def test_the_file_is_closed(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.txt", "a\n")
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    with read_prompts(path) as prompts:
        list(prompts)
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) == before


async def test_generate_many_pays_only_for_real_prompts() -> None:
    """The README's snippet: every create is a real prompt, stripped, sent once."""
    async with FakeProvider(latency=(0.01, 0.03)) as fake:
        poll = PollPolicy(wait_first=0.02, wait_initial=0.02, wait_max=0.1)
        async with FluxClient(ShortAPI("k", base_url=fake.url), poll=poll) as client:
            with read_prompts(EXAMPLES / "prompts.txt") as prompts:
                outcomes = [outcome async for outcome in client.generate_many(prompts)]
    assert len(outcomes) == 20
    assert all(outcome.status == "succeeded" for outcome in outcomes)
    assert fake.create_attempts == 20
    assert sorted(fake.creates_per_prompt) == sorted(
        line.strip()
        for line in (EXAMPLES / "prompts.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert set(fake.creates_per_prompt.values()) == {1}
