"""`hfadapt serve` through the official `openai` client against a uvicorn server on 127.0.0.1: answers equal
`hfadapt predict`, streams join to the answer, adapters mix in a batch without cross-talk, bad requests
fail alone, the API key is checked and never echoed, SIGTERM drains what is in flight."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hfadapt import predict
from tests.conftest import _free_port
from tests.serve_fixtures import chat_adapters, chat_lm, whisper_run  # noqa: F401  (fixtures)

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

PROMPTS = ["say some words", "tell me now", "please say some", "words"]
KEY = "sk-test-0123456789abcdef"


def _start(app: Any) -> tuple[Any, threading.Thread, str]:
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def server(chat_adapters: dict[str, Path], finished_run: Any, whisper_run: Path) -> Any:  # noqa: F811
    from hfadapt.serving.app import build_app
    from hfadapt.serving.registry import load

    lines: list[str] = []
    registry = load([f"colors={chat_adapters['colors']}", f"numbers={chat_adapters['numbers']}",
                     f"sentiment={finished_run.output_dir}", f"asr={whisper_run}"], say=lines.append)
    app = build_app(registry, max_wait_ms=20)
    srv, thread, url = _start(app)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
    yield SimpleNamespace(url=url, client=client, registry=registry, lines=lines, runs={
        "colors": chat_adapters["colors"], "numbers": chat_adapters["numbers"], "sentiment": finished_run.output_dir})
    srv.should_exit = True
    thread.join(30)


def _chat(client: Any, model: str, prompt: str, **kw: Any) -> Any:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], **kw)


def test_startup_names_each_adapter_and_models_lists_them(server: Any, chat_lm: str) -> None:  # noqa: F811
    assert len(server.lines) == 4 and server.lines[0].startswith("serve: colors: causal-lm lora adapter on ")
    models = {m.id: m for m in server.client.models.list().data}
    base = Path(chat_lm).name
    bases = {m.base for m in models.values()}
    assert set(models) == {"colors", "numbers", "sentiment", "asr"} | bases and len(bases) == 3  # and each bare base
    assert models["colors"].task == "causal-lm" and models["colors"].base == base
    assert models["sentiment"].task == "text-classification" and models["asr"].task == "speech-recognition"
    assert models[base].adapter is False
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


def test_chat_and_completions_equal_predict_for_each_adapter(server: Any) -> None:
    answers = {}
    for name in ("colors", "numbers"):
        expected = [p["generated_text"] for p in predict(server.runs[name], PROMPTS)]
        for prompt, want in zip(PROMPTS, expected):
            chat = _chat(server.client, name, prompt)
            assert chat.choices[0].message.content == want, (name, prompt)
            assert chat.model == name and chat.usage.completion_tokens == len(want.split())
            done = server.client.completions.create(model=name, prompt=prompt)
            assert done.choices[0].text == want
        answers[name] = expected
    assert answers["colors"] != answers["numbers"]  # two adapters that answer differently: cross-talk would show


def test_streamed_chunks_join_to_the_answer(server: Any) -> None:
    for name in ("colors", "numbers"):
        for prompt in PROMPTS[:2]:
            whole = _chat(server.client, name, prompt).choices[0].message.content
            chunks = list(_chat(server.client, name, prompt, stream=True, stream_options={"include_usage": True}))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text == whole
            assert chunks[-1].usage.completion_tokens == len(whole.split())
            assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
            parts = list(server.client.completions.create(model=name, prompt=prompt, stream=True))
            assert "".join(p.choices[0].text for p in parts) == whole


def test_stop_sequences_and_max_tokens(server: Any) -> None:
    whole = _chat(server.client, "colors", PROMPTS[0]).choices[0].message.content
    words = whole.split()
    assert len(words) >= 2
    one = _chat(server.client, "colors", PROMPTS[0], max_tokens=1)
    assert one.choices[0].message.content == words[0] and one.choices[0].finish_reason == "length"
    cut = _chat(server.client, "colors", PROMPTS[0], stop=[" " + words[1]])
    assert cut.choices[0].message.content == whole[: whole.index(" " + words[1])] and cut.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in _chat(server.client, "colors", PROMPTS[0], stop=[" " + words[1]], stream=True))
    assert streamed == cut.choices[0].message.content


def test_classify_equals_predict(server: Any) -> None:
    texts = ["the music was truly wonderful", "the plot was really awful", "the ending"]
    got = httpx.post(f"{server.url}/v1/classify", json={"model": "sentiment", "input": texts}).json()
    assert got["model"] == "sentiment" and got["data"] == predict(server.runs["sentiment"], texts)


def test_transcription_equals_predict(server: Any, whisper_run: Path, tone_speech: str) -> None:  # noqa: F811
    clip = Path(tone_speech).parent / "clips" / "1.wav"
    want = predict(whisper_run, [str(clip)])[0]["text"]
    with open(clip, "rb") as f:
        got = server.client.audio.transcriptions.create(model="asr", file=f)
    assert got.text == want
    bad = httpx.post(f"{server.url}/v1/audio/transcriptions", data={"model": "asr"}, files={"file": ("x.wav", b"not a wav file")})
    assert bad.status_code == 400 and bad.json()["error"]["message"]


def test_200_concurrent_requests_over_three_adapters_get_their_own_answers(server: Any) -> None:
    texts = ["the music was truly wonderful", "the plot was really awful"]
    single = {(name, p): _chat(server.client, name, p).choices[0].message.content for name in ("colors", "numbers") for p in PROMPTS}
    single.update({("sentiment", t): predict(server.runs["sentiment"], [t])[0] for t in texts})

    def ask(i: int) -> tuple[tuple[str, str], Any]:
        name = ("colors", "numbers", "sentiment")[i % 3]
        if name == "sentiment":
            t = texts[i % 2]
            return (name, t), httpx.post(f"{server.url}/v1/classify", json={"model": name, "input": t}, timeout=120).json()["data"][0]
        p = PROMPTS[i % len(PROMPTS)]
        return (name, p), _chat(server.client, name, p).choices[0].message.content

    before = _batch_counts(server.url)
    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(ask, range(200)))
    assert len(results) == 200
    for key, answer in results:
        want = single[key]
        if key[0] == "sentiment":  # batched with other lengths: padding moves scores in the 7th digit, as in predict
            assert answer["label"] == want["label"] and answer["scores"] == pytest.approx(want["scores"], abs=1e-5), key
        else:
            assert answer == want, key
    calls, requests = (a - b for a, b in zip(_batch_counts(server.url), before))
    assert requests == 200 and calls < 100, calls  # batched: far fewer model calls than requests


def _batch_counts(url: str) -> tuple[float, float]:
    """(model calls, requests in them) from the batch-size histogram."""
    text = httpx.get(f"{url}/metrics").text
    count = float(next(line.split()[-1] for line in text.splitlines() if line.startswith("hfadapt_batch_size_count")))
    total = float(next(line.split()[-1] for line in text.splitlines() if line.startswith("hfadapt_batch_size_sum")))
    return count, total


def test_a_mixed_batch_equals_separate_requests_and_a_bad_row_fails_alone(chat_adapters: dict[str, Path], chat_lm: str) -> None:  # noqa: F811
    from hfadapt.serving.batching import Batcher, GenParams, Job
    from hfadapt.serving.registry import load

    registry = load([f"colors={chat_adapters['colors']}", f"numbers={chat_adapters['numbers']}"], say=lambda _: None)
    assert registry.groups[0].mixable and len(registry.groups) == 1  # one base model for both adapters
    tok = registry.get("colors").processor
    names = ["colors", "numbers", Path(chat_lm).name, "numbers", "colors"]
    prompts = ["say some words", "tell me now please", "words", "say", "please say some words now"]

    def jobs() -> list[Job]:
        out = []
        for name, prompt in zip(names, prompts):
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
            out.append(Job(registry.get(name), params=GenParams(max_tokens=6), prompt_ids=tok(text, add_special_tokens=False)["input_ids"]))
        return out

    batcher = Batcher(max_batch_size=8)
    alone = []
    for job in jobs():
        batcher.run([job])
        alone.append(job.future.result().text)
    mixed = jobs()
    batch_sizes: list[int] = []
    batcher.on_batch = batch_sizes.append
    batcher.run(mixed)
    assert batch_sizes == [5]  # one generate call for three adapters and the bare base
    assert [j.future.result().text for j in mixed] == alone
    assert alone[0] != alone[1]

    with_bad = jobs()
    with_bad.insert(2, Job(registry.get("colors"), params=GenParams(max_tokens=6), prompt_ids=[10_000]))  # no such token
    batcher.run(with_bad)
    assert isinstance(with_bad[2].future.exception(), Exception)
    assert [j.future.result().text for j in with_bad if j is not with_bad[2]] == alone


def test_bad_requests_fail_alone_in_openai_error_shape(server: Any) -> None:
    bad = [
        ("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}, 404, "model_not_found"),
        ("/v1/chat/completions", {"model": "sentiment", "messages": [{"role": "user", "content": "hi"}]}, 400, "wrong_task"),
        ("/v1/classify", {"model": "colors", "input": "hi"}, 400, "wrong_task"),
        ("/v1/completions", {"model": "colors", "prompt": "say", "max_tokens": 10 ** 6}, 400, None),
        ("/v1/completions", {"model": "colors", "prompt": "say " * 70}, 400, "context_length_exceeded"),
        ("/v1/chat/completions", {"model": "colors"}, 400, None),
        ("/v1/chat/completions", b"{not json", 400, "invalid_json"),
    ]

    def send(item: tuple) -> Any:
        path, body, *_ = item
        if isinstance(body, bytes):
            return httpx.post(f"{server.url}{path}", content=body, headers={"content-type": "application/json"}, timeout=60)
        return httpx.post(f"{server.url}{path}", json=body, timeout=60)

    good = [("/v1/chat/completions", {"model": m, "messages": [{"role": "user", "content": PROMPTS[0]}]}) for m in ("colors", "numbers")] * 4
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, bad + good))
    for (path, _, status, code), r in zip(bad, answers):
        assert r.status_code == status, (path, r.text)
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"] and (code is None or err["code"] == code)
    for r in answers[len(bad):]:
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    huge = httpx.post(f"{server.url}/v1/classify", content=b"x" * (26 * 1024 * 1024), headers={"content-type": "application/json"}, timeout=60)
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "body_too_large"
    with pytest.raises(openai.NotFoundError):
        _chat(server.client, "nope", "hi")
    assert _chat(server.client, "colors", PROMPTS[0]).choices[0].message.content  # still serving


def test_a_client_leaving_mid_stream_leaves_the_server_serving(server: Any) -> None:
    body = {"model": "colors", "messages": [{"role": "user", "content": PROMPTS[0]}], "stream": True}
    for _ in range(3):
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as r:
            assert r.status_code == 200
            next(r.iter_lines())  # one event, then hang up
    assert _chat(server.client, "numbers", PROMPTS[1]).choices[0].message.content
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'hfadapt_requests_total{adapter="colors",endpoint="/v1/chat/completions"}' in metrics
    assert 'hfadapt_generated_tokens_total{adapter="numbers"}' in metrics
    assert 'hfadapt_request_latency_seconds_bucket{adapter="colors"' in metrics


def test_the_api_key_is_required_and_never_echoed(server: Any, capfd: pytest.CaptureFixture) -> None:
    from hfadapt.serving.app import build_app

    app = build_app(server.registry, api_key=KEY)
    srv, thread, url = _start(app)
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}):
            r = httpx.post(f"{url}/v1/chat/completions", headers=headers, json={"model": "colors", "messages": [{"role": "user", "content": "x"}]})
            assert r.status_code == 401 and KEY not in r.text and r.json()["error"]["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError) as e:
            _chat(openai.OpenAI(base_url=f"{url}/v1", api_key="sk-wrong", max_retries=0), "colors", "x")
        assert "sk-wrong" not in str(e.value)
        good = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        assert _chat(good, "colors", PROMPTS[0]).choices[0].message.content
        assert httpx.get(f"{url}/health").status_code == 200  # probes need no key
        assert httpx.get(f"{url}/metrics").status_code == 401
    finally:
        srv.should_exit = True
        thread.join(30)
    out, err = capfd.readouterr()
    assert KEY not in out + err


def _wait_healthy(url: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not come up")


@pytest.mark.slow
def test_sigterm_drains_requests_in_flight_and_logs_one_line_each(chat_adapters: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HFADAPT_API_KEY": KEY, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # --max-wait-ms 3000: the requests sit in the batch worker's queue when SIGTERM comes
    cmd = [sys.executable, "-m", "hfadapt", "serve", f"colors={chat_adapters['colors']}", f"numbers={chat_adapters['numbers']}",
           "--port", str(port), "--max-wait-ms", "3000"]
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen(cmd, stdout=o, stderr=e, env=env)
        try:
            _wait_healthy(url, proc)
            for key in (None, KEY[:-1]):  # no key, a wrong one (the key's prefix): 401, logged without the key
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                assert httpx.get(f"{url}/v1/models", headers=headers).status_code == 401
            client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)
            with ThreadPoolExecutor(6) as pool:
                futures = [pool.submit(_chat, client, ("colors", "numbers")[i % 2], PROMPTS[i % 4]) for i in range(6)]
                time.sleep(1.0)
                proc.send_signal(signal.SIGTERM)
                time.sleep(0.3)
                with pytest.raises(httpx.HTTPError):  # no new requests taken
                    httpx.get(f"{url}/health", timeout=2)
                assert not any(f.done() for f in futures)  # still in flight
                answers = [f.result() for f in futures]
            assert all(a.choices[0].message.content for a in answers)
            assert proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has drained
        finally:
            if proc.poll() is None:
                proc.kill()
    stdout, stderr = out.read_text(), err.read_text()
    assert KEY not in stdout + stderr
    assert [line for line in stdout.splitlines() if line.startswith("serve: ")][:2] == [
        line for line in stdout.splitlines() if line.startswith("serve: colors") or line.startswith("serve: numbers")]
    access = [line for line in stdout.splitlines() if '"POST /v1/chat/completions' in line]
    assert len(access) == 6 and all(line.endswith(" 200 OK") for line in access), stdout
    assert [line.split('"')[1:] for line in stdout.splitlines() if "/v1/models" in line] == [["GET /v1/models HTTP/1.1", " 401 Unauthorized"]] * 2
    assert KEY[:-1] not in stdout + stderr
    assert "Traceback" not in stderr, stderr


def test_engine_vllm_is_refused_in_one_line_without_vllm_or_a_gpu(chat_adapters: dict[str, Path], capsys: pytest.CaptureFixture) -> None:  # noqa: F811
    import importlib.util

    import torch

    from hfadapt.cli import main

    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available():
        pytest.skip("vLLM and a GPU are here: the engine would start")
    assert main(["serve", str(chat_adapters["colors"]), "--engine", "vllm"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert re.match(r"hfadapt: error: serve --engine vllm: (vLLM is not installed|vLLM needs a CUDA GPU)", err), err


def test_bad_adapter_arguments_fail_in_one_line(chat_adapters: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    from hfadapt import HfadaptError
    from hfadapt.serving.registry import load

    run = chat_adapters["colors"]
    with pytest.raises(HfadaptError, match="two adapters are named 'a'"):
        load([f"a={run}", f"a={chat_adapters['numbers']}"], say=lambda _: None)
    with pytest.raises(HfadaptError, match="not a valid adapter name"):
        load([f"bad name={run}"], say=lambda _: None)
    with pytest.raises(HfadaptError, match="run directory not found"):
        load([str(tmp_path / "missing")], say=lambda _: None)


def test_a_merged_adapter_folder_serves_beside_its_sources(chat_adapters: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    from fastapi.testclient import TestClient

    from hfadapt import merge
    from hfadapt.serving.app import build_app

    merged = merge([chat_adapters["colors"], chat_adapters["numbers"]], tmp_path / "merged", method="linear", weights=[0.5, 0.5])
    lines: list[str] = []
    app = build_app([f"colors={chat_adapters['colors']}", f"mix={merged}"], say=lines.append)
    assert len(app.state.service.registry.groups) == 1 and len(lines) == 2  # the merge loads into its sources' base
    with TestClient(app) as client:
        for prompt in PROMPTS[:2]:
            got = client.post("/v1/completions", json={"model": "mix", "prompt": prompt}).json()
            assert got["choices"][0]["text"] == predict(merged, [prompt])[0]["generated_text"]


def test_classify_takes_image_files_as_predict_does(tiny_vit: str, image_folder: str, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from hfadapt import Recipe, train
    from hfadapt.serving.app import build_app

    run = train(Recipe.from_dict({
        "name": "img", "task": "image-classification", "model": {"name_or_path": tiny_vit},
        "data": {"dataset": image_folder}, "adapter": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"max_steps": 2, "batch_size": 8, "learning_rate": 2e-2, "log_with": []},
        "output": {"dir": str(tmp_path / "img")},
    })).output_dir
    images = sorted((Path(image_folder) / "validation" / "red").glob("*.png"))[:2] + sorted((Path(image_folder) / "validation" / "blue").glob("*.png"))[:1]
    with TestClient(build_app([f"img={run}"], say=lambda _: None)) as client:
        got = client.post("/v1/classify", data={"model": "img"}, files=[("file", (p.name, p.read_bytes(), "image/png")) for p in images])
        assert got.status_code == 200, got.text
        want = predict(run, [str(p) for p in images])
        assert [r["input"] for r in got.json()["data"]] == [p.name for p in images]
        for row, ref in zip(got.json()["data"], want):
            assert row["label"] == ref["label"] and row["scores"] == pytest.approx(ref["scores"], abs=1e-6)
        text = client.post("/v1/classify", json={"model": "img", "input": "a red image"})
        assert text.status_code == 400 and "multipart" in text.json()["error"]["message"]
        broken = client.post("/v1/classify", data={"model": "img"}, files=[("file", ("x.png", b"not an image", "image/png"))])
        assert broken.status_code == 400 and broken.json()["error"]["message"]


@pytest.mark.slow
def test_seq2seq_completions_equal_predict(tmp_path: Path) -> None:
    """The encoder-decoder path: right-padded sources in one generate, answers and streams as predict's."""
    import torch
    from fastapi.testclient import TestClient
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    from hfadapt import Recipe, train
    from hfadapt.serving.app import build_app
    from tests.conftest import write_jsonl
    from tests.test_seq2seq import WORDS, rows

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    config = T5Config(vocab_size=len(WORDS), d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, num_decoder_layers=2,
                      relative_attention_num_buckets=8, dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(tmp_path / "t5")
    tok.save_pretrained(tmp_path / "t5")
    run = train(Recipe.from_dict({
        "name": "s2s", "task": "seq2seq", "model": {"name_or_path": str(tmp_path / "t5")},
        "data": {"train_files": [str(write_jsonl(tmp_path / "train.jsonl", rows(64, 0)))], "validation_split": None, "max_length": 16},
        "adapter": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "train": {"max_steps": 30, "batch_size": 8, "learning_rate": 1e-2, "log_with": []},
        "generation": {"max_new_tokens": 4}, "output": {"dir": str(tmp_path / "run")},
    })).output_dir
    sources = [r["text"] for r in rows(6, 3)]
    want = [p["generated_text"] for p in predict(run, sources)]
    assert any(want)
    with TestClient(build_app([f"s2s={run}"], say=lambda _: None)) as client:
        got = client.post("/v1/completions", json={"model": "s2s", "prompt": sources}).json()  # one batch, right-padded
        assert [c["text"] for c in got["choices"]] == want
        events = client.post("/v1/completions", json={"model": "s2s", "prompt": sources[0], "stream": True}).text.split("\n\n")
        chunks = [json.loads(e[6:]) for e in events if e.startswith("data: {")]
        assert "".join(c["choices"][0]["text"] for c in chunks) == want[0]
