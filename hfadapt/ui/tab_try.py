"""The Try tab: predict with a finished run the way `hfadapt predict` does, with the inputs and
outputs its task calls for; causal-lm runs chat, their answer streamed token by token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

from hfadapt.core.errors import HfadaptError
from hfadapt.ui.shared import Context, Shared, attempt, error_line

_LABEL_LIKE = ("text-classification", "image-classification", "audio-classification")


def _visibility(task: str | None) -> tuple:
    """gr.update(visible=...) of the input groups (text, qa, image, audio, chat) and the outputs
    (label, entities, text) for a run's task."""
    import gradio as gr

    groups = {"text": task in ("text-classification", "token-classification", "seq2seq", "reward-model"),
              "qa": task == "question-answering", "image": task == "image-classification",
              "audio": task in ("audio-classification", "speech-recognition"), "chat": task == "causal-lm"}
    label_like = task in _LABEL_LIKE
    return (*(gr.update(visible=v) for v in groups.values()),
            gr.update(visible=label_like), gr.update(visible=task == "token-classification"),
            gr.update(visible=not label_like and task != "token-classification"))


def _predict(run: Path, text: str, pair: str, question: str, context: str, image: str | None, audio: str | None) -> tuple:
    """(labels, entities, output text, the raw JSON line) of one prediction from the task's input."""
    from hfadapt.inference.run_model import predict
    from hfadapt.rundir.layout import RunDir

    task = RunDir(run).recipe_dict().get("task")
    if task == "question-answering":
        item = f"{question}\t{context}"
    elif task == "image-classification":
        item = image
    elif task in ("audio-classification", "speech-recognition"):
        item = audio
    else:
        item = f"{text}\t{pair}" if pair.strip() else text
    if not item or not str(item).strip():
        raise HfadaptError("predict: no input given")
    row = predict(str(run), [item])[0]
    scores = row.get("scores") if isinstance(row.get("scores"), dict) else None
    label = {k: float(v) for k, v in scores.items()} if scores else ({row["label"]: float(row.get("score", 1.0))} if "label" in row else None)
    entities = _entities(row, str(item))
    shown_text = next((str(row[k]) for k in ("text", "answer", "generated", "prediction", "score") if k in row), "")
    return label, entities, shown_text, json.dumps(row)


def build_try_tab(shared: Shared) -> None:
    import gradio as gr

    ctx = shared.ctx
    with gr.Tab("Try", id="try", elem_id="tab-try"):
        with gr.Row():
            try_run = shared.run_picker(label="finished run", elem_id="try-run")
        try_msg = gr.Markdown("", elem_id="try-status")
        with gr.Group(visible=True) as text_group:
            try_text = gr.Textbox(label="text", elem_id="try-text")
            try_pair = gr.Textbox(label="second text (text pairs; empty for single texts)", elem_id="try-pair")
        with gr.Group(visible=False) as qa_group:
            try_question = gr.Textbox(label="question", elem_id="try-question")
            try_context = gr.Textbox(label="context", lines=5, elem_id="try-context")
        with gr.Group(visible=False) as image_group:
            try_image = gr.Image(type="filepath", label="image", elem_id="try-image")
        with gr.Group(visible=False) as audio_group:
            try_audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="audio", elem_id="try-audio")
        with gr.Group(visible=False) as chat_group:
            chat = gr.Chatbot(label="chat", elem_id="try-chat")
            chat_in = gr.Textbox(label="message", elem_id="try-chat-input")
        try_btn = gr.Button("Predict", variant="primary", elem_id="try-go")
        label_out = gr.Label(label="labels", elem_id="try-label", visible=True)
        highlight_out = gr.HighlightedText(label="entities", elem_id="try-entities", visible=False)
        text_out = gr.Textbox(label="output", elem_id="try-output", visible=False, interactive=False)
        raw_out = gr.Textbox(label="what `hfadapt predict` prints", elem_id="try-raw", interactive=False, lines=3)

    def pick_try(name: str) -> tuple:
        from hfadapt.rundir.layout import RunDir

        task = RunDir(ctx.run_path(name)).recipe_dict().get("task")
        return (f"task: {task}", *_visibility(task))

    try_run.input(attempt(pick_try, 9), try_run,
                  [try_msg, text_group, qa_group, image_group, audio_group, chat_group, label_out, highlight_out, text_out])

    def do_try(name: str, text: str, pair: str, question: str, context: str, image: str | None, audio: str | None) -> tuple:
        return "", *_predict(ctx.run_path(name), text, pair, question, context, image, audio)

    try_btn.click(attempt(do_try, 5), [try_run, try_text, try_pair, try_question, try_context, try_image, try_audio],
                  [try_msg, label_out, highlight_out, text_out, raw_out])
    chat_in.submit(_chat(ctx), [try_run, chat_in, chat], [chat, chat_in, try_msg])


def _chat(ctx: Context) -> Callable[..., Iterator[tuple]]:
    """The chat handler: a generator, so Gradio streams the answer as it grows."""
    import gradio as gr

    def do_chat(name: str, message: str, history: list) -> Iterator[tuple]:
        try:
            run = ctx.run_path(name)
            history = (history or []) + [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
            for piece in _stream(run, message):
                history[-1]["content"] += piece
                yield history, "", ""
        except (HfadaptError, OSError, ValueError) as e:
            yield gr.skip(), gr.skip(), error_line(e)
    return do_chat


def _entities(row: dict[str, Any], text: str) -> list[tuple[str, str | None]] | None:
    """token-classification: the text with its entities marked, for HighlightedText."""
    ents = row.get("entities")
    if not isinstance(ents, list):
        return None
    out, at = [], 0
    for e in ents:
        start, end = e.get("start"), e.get("end")
        if not isinstance(start, int) or not isinstance(end, int) or start < at:
            continue
        out += [(text[at:start], None), (text[start:end], str(e.get("label") or e.get("entity")))]
        at = end
    return out + [(text[at:], None)]


def _stream(run: Path, prompt: str) -> Any:
    """causal-lm: the completion of `prompt` token by token (TextIteratorStreamer over the run's model)."""
    from threading import Thread

    from transformers import TextIteratorStreamer

    from hfadapt.inference.run_model import load_model_and_processor
    from hfadapt.rundir.layout import RunDir

    rd = RunDir.open(run)
    model, tokenizer, _ = load_model_and_processor(rd, ref=run)
    g = rd.recipe.generation
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    inputs = tokenizer(prompt, return_tensors="pt")
    kwargs = dict(**inputs, max_new_tokens=g.max_new_tokens, do_sample=g.do_sample, streamer=streamer)
    if g.do_sample:
        kwargs.update(temperature=g.temperature, top_p=g.top_p)
    Thread(target=model.generate, kwargs=kwargs, daemon=True).start()
    yield from streamer
