"""The one worker thread that runs the models: requests waiting at the same time go in one call.

Generation requests of one base model run in one `generate`, their adapters mixed row by row (peft's
`adapter_names`, LoRA); requests whose adapters cannot mix, and classify/transcribe requests (the
task's own `predict` hook, so answers equal `hfadapt predict`), run grouped by adapter. A batch that
fails is run again one request at a time, so a bad request fails alone. Each generated token goes to
its request as it comes (streaming), and a request that is done (EOS, its own `max_tokens`, a stop
sequence, a client gone) leaves the batch at once.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from hfadapt.serving.errors import Cancelled
from hfadapt.serving.registry import BASE_ROWS, GENERATIVE

if TYPE_CHECKING:
    from hfadapt.serving.registry import Served


@dataclass(frozen=True)
class GenParams:
    max_tokens: int
    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    num_beams: int = 1


@dataclass
class GenResult:
    text: str
    finish_reason: str  # "stop" (EOS or a stop sequence) or "length"
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Job:
    served: Served
    params: GenParams | None = None  # generation
    prepare: Callable[[], list[int]] | None = None  # generation: the prompt's token ids, run on the worker
    prompt_ids: list[int] | None = None
    items: list[str] | None = None  # predict: the inputs of the task's predict hook
    stream: Callable[[str | None], None] | None = None  # called from the worker: each text delta, then None
    future: Future = field(default_factory=Future)
    cancelled: threading.Event = field(default_factory=threading.Event)
    sent: str = ""  # the text streamed so far: a batch run again request by request goes on from it

    @property
    def generative(self) -> bool:
        return self.params is not None


class Row:
    """One generation request inside a batch: its tokens so far, whether it is done, the text sent."""

    def __init__(self, job: Job, tokenizer: Any, eos: set[int]) -> None:
        self.job, self.tok, self.eos = job, tokenizer, eos
        self.ids: list[int] = []
        self.done = False
        self.finished = False  # its answer was handed over
        self.reason = "length"
        self.hold = max((len(s) for s in job.params.stop), default=1) - 1  # a stop sequence may be coming

    def push(self, token: int) -> None:
        if self.done:
            return
        if self.job.cancelled.is_set():
            self.done, self.reason = True, "cancelled"
            return
        if token in self.eos:
            self.done, self.reason = True, "stop"
            return
        self.ids.append(token)
        if self.job.params.stop and self._cut()[1]:
            self.done, self.reason = True, "stop"
        elif len(self.ids) >= self.job.params.max_tokens:
            self.done, self.reason = True, "length"

    def _cut(self) -> tuple[str, bool]:
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        at = min((i for i in (text.find(s) for s in self.job.params.stop) if i >= 0), default=-1)
        return (text[:at], True) if at >= 0 else (text, False)

    def text(self) -> str:
        """The answer as `hfadapt predict` gives it: special tokens dropped, cut at a stop sequence, stripped."""
        return self._cut()[0].strip()

    def delta(self, final: bool) -> str:
        """Text not sent yet. Before the end, trailing whitespace, a half-decoded character and what could
        be the start of a stop sequence are held back, so the deltas join to text()."""
        text = self.text()
        if not final:
            text = text.rstrip("\ufffd")
            if self.hold and not self.done:
                text = text[: max(len(self.job.sent), len(text) - self.hold)]
        sent = self.job.sent
        if not text.startswith(sent) or len(text) <= len(sent):
            return ""
        self.job.sent = text
        return text[len(sent):]

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        job = self.job
        if self.reason == "cancelled":
            _fail(job, Cancelled())
            return
        if job.stream is not None:
            rest = self.delta(final=True)
            if rest:
                job.stream(rest)
        result = GenResult(self.text(), self.reason, len(job.prompt_ids or []), len(self.ids))
        if not job.future.done():
            job.future.set_result(result)
        if job.stream is not None:
            job.stream(None)


def _fail(job: Job, error: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(error)
    if job.stream is not None:
        job.stream(None)


class Batcher:
    """Collects jobs for up to `max_wait_ms` after the first one (at most `max_batch_size`), then runs them."""

    def __init__(self, max_batch_size: int = 32, max_wait_ms: float = 10.0, on_batch: Callable[[int], None] | None = None,
                 on_tokens: Callable[[str, int], None] | None = None, engine: Any = None) -> None:
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000
        self.engine = engine  # --engine vllm: a VllmGenerator for the causal-lm bases it handles
        self.on_batch, self.on_tokens = on_batch, on_tokens
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="hfadapt-batcher", daemon=True)
        self.closed = False

    def start(self) -> None:
        self.thread.start()

    def submit(self, job: Job) -> Job:
        if self.closed:
            raise RuntimeError("the server is shutting down")
        self.queue.put(job)
        return job

    def stop(self) -> None:
        """Run what is queued, then end the worker."""
        if not self.closed:
            self.closed = True
            self.queue.put(None)
        if self.thread.is_alive():
            self.thread.join()

    def _loop(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            jobs, last = [job], False
            deadline = time.monotonic() + self.max_wait
            while len(jobs) < self.max_batch_size:
                try:
                    nxt = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    last = True
                    break
                jobs.append(nxt)
            self.run(jobs)
            if last:
                return

    def run(self, jobs: list[Job]) -> None:
        """Run `jobs` (the worker's batch; tests call it directly to check a mixed batch)."""
        live = []
        for job in jobs:
            if job.cancelled.is_set():
                _fail(job, Cancelled())
                continue
            if job.prepare is not None and job.prompt_ids is None:
                # tokenizers are used by this thread only: a fast tokenizer is not safe across threads
                try:
                    job.prompt_ids = job.prepare()
                except Exception as e:  # noqa: BLE001 - a prompt that cannot be encoded fails alone
                    _fail(job, e)
                    continue
            live.append(job)
        groups: dict[tuple, list[Job]] = {}
        for job in live:
            groups.setdefault(_group_key(job), []).append(job)
        for group in groups.values():
            if self.on_batch:
                self.on_batch(len(group))
            try:
                self._execute(group)
            except Exception as e:  # noqa: BLE001 - run the batch one by one: only the bad request fails
                if len(group) == 1:
                    _fail(group[0], e)
                    continue
                for job in group:
                    if job.future.done():
                        continue
                    try:
                        self._execute([job])
                    except Exception as one:  # noqa: BLE001
                        _fail(job, one)

    def _execute(self, jobs: list[Job]) -> None:
        if jobs[0].generative:
            self._generate(jobs)
        else:
            self._predict(jobs)

    def _predict(self, jobs: list[Job]) -> None:
        import torch

        served = jobs[0].served
        items = [x for job in jobs for x in job.items or []]
        with _adapter(served), torch.no_grad():
            preds = served.task_obj.predict(served.group.model, served.processor, items, served.recipe, served.info)
        start = 0
        for job in jobs:
            n = len(job.items or [])
            job.future.set_result([{"input": x, **p} for x, p in zip(job.items or [], preds[start:start + n])])
            start += n

    def _generate(self, jobs: list[Job]) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        first = jobs[0].served
        group, tok, p = first.group, first.processor, jobs[0].params
        model = group.model
        seq2seq = GENERATIVE[first.task] == "seq2seq"
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        width = max(len(j.prompt_ids) for j in jobs)
        if seq2seq:  # the encoder reads right-padded sources, as the task's predict pads them
            ids = [j.prompt_ids + [pad] * (width - len(j.prompt_ids)) for j in jobs]
            mask = [[1] * len(j.prompt_ids) + [0] * (width - len(j.prompt_ids)) for j in jobs]
        else:  # generation continues the last token: left padding, as predict's encode_prompts
            ids = [[pad] * (width - len(j.prompt_ids)) + j.prompt_ids for j in jobs]
            mask = [[0] * (width - len(j.prompt_ids)) + [1] * len(j.prompt_ids) for j in jobs]
        device = next(model.parameters()).device
        batch = {"input_ids": torch.tensor(ids, device=device), "attention_mask": torch.tensor(mask, device=device)}
        kwargs: dict[str, Any] = {"max_new_tokens": max(j.params.max_tokens for j in jobs), "num_beams": p.num_beams,
                                  "do_sample": p.do_sample}
        if p.do_sample:
            kwargs.update(temperature=p.temperature, top_p=p.top_p)
        gen_config = getattr(model, "generation_config", None)
        if not seq2seq:  # as language.generate (causal-lm predict)
            kwargs["pad_token_id"] = pad
            if tok.eos_token_id is not None and getattr(gen_config, "eos_token_id", None) is None:
                kwargs["eos_token_id"] = tok.eos_token_id
        eos = kwargs.get("eos_token_id", getattr(gen_config, "eos_token_id", None))
        eos = eos if eos is not None else tok.eos_token_id
        eos_ids = set(eos) if isinstance(eos, (list, tuple)) else ({eos} if eos is not None else set())
        rows = [Row(j, tok, eos_ids) for j in jobs]
        if self.engine is not None and self.engine.handles(group):
            self.engine.generate(jobs, rows)
            self._finish(rows)
            return

        class Feed(BaseStreamer):
            """Each step's tokens, row by row; a row that is done hands its answer over now."""

            def __init__(self) -> None:
                self.prompt = True

            def put(self, value: Any) -> None:
                if self.prompt:  # generate's first call: the prompt (decoder start for seq2seq)
                    self.prompt = False
                    return
                for row, token in zip(rows, value.reshape(len(rows), -1)[:, -1].tolist()):
                    if row.done:
                        continue
                    row.push(int(token))
                    if row.done:
                        row.finish()
                    elif row.job.stream is not None:
                        delta = row.delta(final=False)
                        if delta:
                            row.job.stream(delta)

            def end(self) -> None:
                pass

        class Done(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> Any:
                return torch.tensor([r.done or r.job.cancelled.is_set() for r in rows], device=input_ids.device)

        streamed = p.num_beams == 1  # transformers streams greedy and sampled decoding, not beam search
        if streamed:
            kwargs.update(streamer=Feed(), stopping_criteria=StoppingCriteriaList([Done()]))
        ctx: Any = nullcontext()
        if len({j.served.name for j in jobs}) > 1:  # _group_key lets only mixable adapters share a batch
            kwargs["adapter_names"] = [j.served.peft_name or BASE_ROWS for j in jobs]
        else:  # one adapter: peft's plain forward, cheaper than the mixed one
            ctx = _adapter(first)
        if p.do_sample and p.seed is not None:
            torch.manual_seed(p.seed)
        try:
            with ctx, torch.no_grad():
                out = model.generate(**batch, **kwargs)
        except Exception:
            if "adapter_names" in kwargs:
                _drop_adapter_name_hooks(model)
            raise
        if not streamed:
            new = out[:, 1:] if seq2seq else out[:, width:]  # seq2seq: after the decoder start token
            for row, tokens in zip(rows, new.tolist()):
                for t in tokens:
                    row.push(int(t))
        self._finish(rows)

    def _finish(self, rows: list[Row]) -> None:
        for row in rows:
            if self.on_tokens:
                self.on_tokens(row.job.served.name, len(row.ids))
            row.finish()


def _drop_adapter_name_hooks(model: Any) -> None:
    """peft removes the pre-forward hooks that carry `adapter_names` after generate, but not when generate
    raised: the next forward would still get the failed batch's names. Remove them."""
    import functools

    from peft.tuners.lora import model as lora_model

    hook = getattr(lora_model, "_adapter_names_pre_forward_hook", None)
    for module in model.modules():
        for key, fn in list(module._forward_pre_hooks.items()):
            if isinstance(fn, functools.partial) and fn.func is hook:
                del module._forward_pre_hooks[key]
                module._forward_pre_hooks_with_kwargs.pop(key, None)


def _adapter(served: Served) -> Any:
    """Switch the served adapter on (a context: the bare base is the adapter switched off)."""
    group = served.group
    if not group.peft:
        return nullcontext()
    if served.peft_name is None:
        return group.model.disable_adapter()
    group.model.set_adapter(served.peft_name)
    return nullcontext()


def _group_key(job: Job) -> tuple:
    served = job.served
    if not job.generative:
        return (id(served.group), "predict", served.name)
    p = job.params
    mix = served.group.peft and served.group.mixable and p.num_beams == 1
    # a seeded request samples alone: its answer must not depend on what it was batched with
    sampling = (p.temperature, p.top_p, id(job) if p.seed is not None else None) if p.do_sample else None
    return (id(served.group), "generate", p.do_sample, sampling, p.num_beams, None if mix else served.name)
