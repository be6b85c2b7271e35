"""What a workspace's files are, judged by their content (never by their name): what the
Jupyter server may hand to the browser (:mod:`tre.workspace.contents`) and what it must not.

Handed over: notebooks (their outputs cut past a size), text and code, and PNG, JPEG and GIF
images, under a size. Never handed over: data, whatever its name. Binary formats are known by
their signature (Parquet, Arrow and Feather, DuckDB, SQLite, pickles, NumPy, HDF5, Office files,
archives and compressed files of every common kind); any other binary is refused too. Text is
data when it is a table (most of ten or more lines split by the same number of one delimiter:
CSV, TSV, ``|`` or ``;``; or into the same number of words in columns aligned by spaces, as
pandas prints a DataFrame), an HTML table of ten or more rows, JSON lines, or a JSON array of
records.
"""

from __future__ import annotations

import ast
import collections
import io
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

#: (offset, signature, what it is) of the binary formats data comes in.
DATA_SIGNATURES = (
    (0, b"PAR1", "a Parquet file"),
    (0, b"ARROW1", "an Arrow file"),
    (0, b"\xff\xff\xff\xff", "an Arrow stream"),
    (0, b"FEA1", "a Feather file"),
    (8, b"DUCK", "a DuckDB database"),
    (0, b"SQLite format 3\x00", "an SQLite database"),
    (0, b"\x93NUMPY", "a NumPy array"),
    (0, b"\x89HDF", "an HDF5 file"),
    (0, b"ORC", "an ORC file"),
    (0, b"Obj\x01", "an Avro file"),
    (0, b"\xd0\xcf\x11\xe0", "an Office file"),
    (0, b"PK\x03\x04", "a zip archive (or Office file)"),
    (0, b"PK\x05\x06", "a zip archive"),
    (0, b"\x1f\x8b", "a gzip file"),
    (0, b"BZh", "a bzip2 file"),
    (0, b"\xfd7zXZ\x00", "an xz file"),
    (0, b"7z\xbc\xaf\x27\x1c", "a 7-zip archive"),
    (0, b"\x28\xb5\x2f\xfd", "a Zstandard file"),
    (0, b"\x04\x22\x4d\x18", "an LZ4 file"),
    (257, b"ustar", "a tar archive"),
)
#: (signature, how the image ends, its MIME type): an image with bytes after its end is refused.
IMAGES = (
    (b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82", "image/png"),
    (b"\xff\xd8\xff", b"\xff\xd9", "image/jpeg"),
    (b"GIF87a", b"\x3b", "image/gif"),
    (b"GIF89a", b"\x3b", "image/gif"),
)
#: A run this long of base64 or hexadecimal characters is encoded data, not text or code.
ENCODED = re.compile(r"[A-Za-z0-9+/=_-]{4096}")
DELIMITERS = ",\t;|& "
#: Fewer lines than this are never judged a table (a short text with commas is no extract).
TABLE_LINES = 10
#: The share of lines that must agree for a text to be a table.
AGREEING = 0.8
#: How many of a text's agreeing lines are looked at for columns aligned by spaces.
ALIGNED_SAMPLE = 200
HTML_ROW = re.compile(r"<tr[\s>]", re.IGNORECASE)


class Refused(Exception):
    """The file is not handed over; the message says why (without its content)."""


def image_type(data: bytes) -> str | None:
    """The MIME type of the image ``data`` starts as; :class:`Refused` if bytes follow its
    end (something carried behind an image)."""
    for signature, end, kind in IMAGES:
        if data.startswith(signature):
            if not data.endswith(end):
                raise Refused("it is not a whole image: bytes follow the image's end")
            return kind
    return None


#: The largest image shown (pixels each way): larger is no figure.
IMAGE_SIDE = 8192


def redrawn(data: bytes) -> bytes:
    """The image ``data`` drawn again from its pixels alone, in its own format: whatever its
    file carried besides (chunks, comments, metadata, bytes after its end) is left behind.
    Raises :class:`Refused` if it does not decode as an image."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if max(image.size) > IMAGE_SIDE:
                raise Refused(f"it is an image larger than {IMAGE_SIDE} pixels a side")
            kind = image.format
            image.load()
            pixels = Image.frombytes(image.mode, image.size, image.tobytes())
            if image.mode == "P" and image.getpalette():
                pixels.putpalette(image.getpalette())
    except (OSError, ValueError, SyntaxError) as e:
        raise Refused(f"it does not decode as an image ({type(e).__name__})") from None
    out = io.BytesIO()
    pixels.save(out, format=kind)
    return out.getvalue()


def judge(data: bytes, limit: int) -> str:
    """What ``data`` (a whole file) may be handed over as: ``"notebook"``, ``"text"`` or an
    image's MIME type. Raises :class:`Refused` for data, unknown binaries, and anything over
    ``limit`` bytes (notebooks are judged again once their outputs are cut)."""
    for offset, signature, what in DATA_SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            raise Refused(f"it is {what}: data never leaves the workspace but by the airlock")
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        raise Refused("it is a Python pickle: data never leaves the workspace but by the airlock")
    kind = image_type(data)
    if kind is not None:
        if len(data) > limit:
            raise Refused(too_large(len(data), limit))
        redrawn(data)  # it decodes as an image
        return kind
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("it is neither text, a notebook nor an image") from None
    if "\x00" in text:
        raise Refused("it is neither text, a notebook nor an image")
    notebook = _notebook(text)
    if notebook is not None:
        # Everything but its outputs (cut, not refused: see cut_outputs): sources, metadata,
        # attachments.
        for value in strings(notebook, skip=lambda key: key == "outputs"):
            why = data_in(value)
            if why:
                raise Refused(f"it holds {why}: data leaves the workspace by the airlock")
        return "notebook"
    if len(data) > limit:
        raise Refused(too_large(len(data), limit))
    why = data_in(text)
    if why:
        raise Refused(f"it is {why}: data never leaves the workspace but by the airlock")
    return "text"


def data_in(text: str) -> str:
    """What data ``text`` holds (``""`` if none): a table, records, or encoded bytes."""
    if ENCODED.search(text):
        return "encoded data (a long run of base64 or hexadecimal)"
    return tabular(text) or structured(text)


#: A JSON or Python literal (a dict of columns, a list of records) holding this many values or
#: more is data; so is an XML document with an element repeated :data:`TABLE_LINES` times.
STRUCTURED_VALUES = 50
XML_ELEMENT = re.compile(r"<([A-Za-z_][\w.-]*)[\s/>]")


def structured(text: str) -> str:
    """What data ``text`` holds as a whole JSON value or Python literal (pandas' ``to_json``,
    the ``repr`` of ``to_dict("records")``), or as XML (``to_xml``); ``""`` if none."""
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        value: Any = None
        for read in (json.loads, ast.literal_eval):
            try:
                value = read(stripped)
                break
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
        values = _values_in(value)
        if values >= STRUCTURED_VALUES:
            return f"structured data ({values:,} values or more)"
    if stripped.startswith("<?xml"):
        counts = collections.Counter(XML_ELEMENT.findall(stripped))
        if counts and counts.most_common(1)[0][1] >= TABLE_LINES:
            return f"XML data ({counts.most_common(1)[0][1]:,} repeated elements)"
    return ""


def _values_in(value: Any) -> int:
    """How many leaf values ``value`` holds (counting stops at :data:`STRUCTURED_VALUES`)."""
    count, stack = 0, [value]
    while stack and count < STRUCTURED_VALUES:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set):
            stack.extend(item)
        elif item is not None:
            count += 1
    return count


def too_large(size: int, limit: int) -> str:
    return (
        f"it holds {size:,} bytes, more than the {limit:,} a workspace shows in the browser: "
        "summaries leave through the airlock"
    )


def _notebook(text: str) -> dict[str, Any] | None:
    if not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("cells"), list) and "nbformat" in value:
        return value
    return None


def tabular(text: str) -> str:
    """What data ``text`` holds (``""`` if none): a delimited table, JSON lines or records."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) >= TABLE_LINES:
        for delimiter in DELIMITERS:
            # A delimiter that ends a line separates nothing: a list of names each followed by
            # a comma (code's lists, one item a line) is one column, as the names alone are.
            counts = collections.Counter(
                line.rstrip().removesuffix(delimiter).count(delimiter) for line in lines
            )
            columns, agreeing = counts.most_common(1)[0]
            if delimiter == " " and not _mostly_figures(lines):
                continue  # prose and code split by spaces too: a table of them holds figures
            if columns and agreeing >= AGREEING * len(lines):
                name = {",": "CSV", "\t": "TSV"}.get(delimiter, f"a table split by {delimiter!r}")
                return f"{name} data ({len(lines):,} lines of {columns + 1} columns)"
        records = sum(
            1 for line in lines if line.lstrip()[:1] in "{[" and line.rstrip()[-1:] in "}]"
        )
        if records >= AGREEING * len(lines):
            return f"JSON lines ({len(lines):,} records)"
        aligned = _aligned_columns(lines)
        if aligned:
            return f"a table of {aligned} columns aligned by spaces ({len(lines):,} lines)"
    rows = len(HTML_ROW.findall(text))
    if rows >= TABLE_LINES:
        return f"an HTML table ({rows:,} rows)"
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except ValueError:
            return ""
        if isinstance(value, list) and len(value) >= TABLE_LINES:
            return f"a JSON array of {len(value):,} records"
    return ""


def _mostly_figures(lines: list[str]) -> bool:
    """Whether half or more of the words of ``lines`` hold a digit (rows of values do; prose
    and code seldom)."""
    words = [w for line in lines[:ALIGNED_SAMPLE] for w in line.split()]
    return bool(words) and sum(any(ch.isdigit() for ch in w) for w in words) * 2 >= len(words)


def _aligned_columns(lines: list[str]) -> int:
    """How many columns ``lines`` have when most of them split into the same number (2 or
    more) of words, and at least one position holds a space between words in every one of
    them (a gutter between columns, as a fixed-width table has; prose and code have none);
    0 when they do not."""
    counts = collections.Counter(len(line.split()) for line in lines)
    fields, agreeing = counts.most_common(1)[0]
    if fields < 2 or agreeing < AGREEING * len(lines):
        return 0
    rows = [line.rstrip() for line in lines if len(line.split()) == fields][:ALIGNED_SAMPLE]
    width = min(len(row) for row in rows)
    for position in range(1, width - 1):
        if all(
            row[position] == " " and row[:position].strip() and row[position + 1 :].strip()
            for row in rows
        ):
            return fields
    return 0


def strings(value: Any, skip: Callable[[str], bool] = lambda key: False) -> Iterator[str]:
    """Every text in a notebook's JSON ``value`` (a list of strings is one text: a source or
    an output's lines), but under keys ``skip`` says to leave."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        if value and all(isinstance(v, str) for v in value):
            yield "".join(value)
        else:
            for v in value:
                yield from strings(v, skip)
    elif isinstance(value, dict):
        for key, v in value.items():
            if not skip(str(key)):
                yield from strings(v, skip)


def cut_outputs(notebook: dict[str, Any], limit: int) -> int:
    """Cut, in place, every output of ``notebook`` larger than ``limit`` bytes (its text or any
    of its representations), or whose text is data (:func:`tabular`: a CSV printed whole), to a
    note that says so; how many were cut."""
    cut = 0
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []) if isinstance(cell, dict) else []:
            if not isinstance(output, dict):
                continue
            size = len(json.dumps(output, default=str))
            # Its texts in every representation but images (drawn, they are what it shows).
            texts = strings(output, skip=lambda key: key.startswith("image/"))
            why = next((w for w in map(data_in, texts) if w), "")
            if size <= limit and not why:
                continue
            note = (
                f"[Output cut by the TRE: {why}. Summaries leave through the airlock.]\n"
                if why
                else f"[Output cut by the TRE: {size:,} bytes, more than the {limit:,} a "
                "notebook shows in the browser. Summaries leave through the airlock.]\n"
            )
            kept = {k: output[k] for k in ("execution_count",) if k in output}
            output.clear()
            output.update(kept)
            if "execution_count" in kept:
                output.update(output_type="execute_result", metadata={}, data={"text/plain": note})
            else:
                output.update(output_type="stream", name="stdout", text=note)
            cut += 1
    return cut
