"""Rich results as model input: a run's text plus its images, shaped for OpenAI and Anthropic
tool results and as MCP content, so that a model can see the chart its code drew."""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

from .models import ExecutionResult, Result

#: Most characters of one result's text representation given to a model.
MAX_RESULT_TEXT = 20_000


def _images(results: List[Result]) -> Iterator[Tuple[str, str]]:
    """(media type, base64) of each image result, in order."""
    for r in results:
        if r.png is not None:
            yield "image/png", r.png
        elif r.jpeg is not None:
            yield "image/jpeg", r.jpeg


def results_text(execution: ExecutionResult) -> str:
    """The results' text for a model: the main result as ``Out: ...``, others as
    ``[display] ...`` (markdown, else text), images as a placeholder line."""
    lines = []
    for r in execution.results:
        if r.truncated:
            lines.append(r.text or "[results truncated]")
            continue
        body: Optional[str]
        if r.png is not None or r.jpeg is not None:
            body = "[image]"  # the image itself goes as image content
        else:
            body = r.markdown if r.markdown is not None and not r.is_main_result else r.text
        if body is None:
            body = f"[{', '.join(r.formats()) or 'empty'}]"
        if len(body) > MAX_RESULT_TEXT:
            body = body[:MAX_RESULT_TEXT] + " [...]"
        lines.append(f"Out: {body}" if r.is_main_result else f"[display] {body}")
    return "\n".join(lines)


def openai_content(execution: ExecutionResult, text: str) -> List[Dict[str, Any]]:
    """Content parts for an OpenAI message: ``text``, then each image as an ``image_url``
    part (a data URL). (OpenAI's ``tool`` messages take text parts only; send images in a
    following ``user`` message: see :meth:`cerver.tools.ToolSession.openai_messages`.)"""
    parts: List[Dict[str, Any]] = [{"type": "text", "text": text}]
    for media, data in _images(execution.results):
        parts.append({"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}})
    return parts


def anthropic_content(execution: ExecutionResult, text: str) -> List[Dict[str, Any]]:
    """Content blocks for an Anthropic ``tool_result``: ``text``, then image blocks."""
    blocks: List[Dict[str, Any]] = [{"type": "text", "text": text}]
    for media, data in _images(execution.results):
        blocks.append(
            {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
        )
    return blocks


def mcp_content(execution: ExecutionResult, text: str) -> List[Dict[str, Any]]:
    """MCP tool-result content: a ``text`` item, then ``image`` items (``ImageContent``)."""
    items: List[Dict[str, Any]] = [{"type": "text", "text": text}]
    for media, data in _images(execution.results):
        items.append({"type": "image", "data": data, "mimeType": media})
    return items
