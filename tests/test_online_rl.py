"""task: online-rl: parity with TRL's GRPOTrainer (advantages and loss per loss_type), learning a verifiable
toy task, seeded sampling, bad inputs one line each."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch

from hfadapt import HfadaptError, Recipe, train
from tests.conftest import write_jsonl
from tests.test_preference import save_tiny_llama

WORDS = "one two three four five six".split()


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama-rl"))


def prompts(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"prompt": "say " + " ".join(rng.choice(WORDS) for _ in range(2)), "answer": "red"} for _ in range(n)]


def rl_recipe(tmp: Path, model: str, rl: dict[str, Any], rows: list[dict[str, Any]] | None = None, **train_over: Any) -> Recipe:
    data_file = write_jsonl(tmp / "prompts.jsonl", rows if rows is not None else prompts(32))
    return Recipe.from_dict({
        "name": "rl", "task": "online-rl", "model": {"name_or_path": model},
        "data": {"train_files": [str(data_file)], "max_prompt_length": 16},
        "rl": {"num_generations": 8, "max_completion_length": 4, **rl},
        "adapter": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "train": {"max_steps": 2, "batch_size": 4, "learning_rate": 5e-2, "logging_steps": 1, "log_with": [], **train_over},
        "output": {"dir": str(tmp / "run")},
    }, source=tmp / "recipe.yaml")


STARTS_RED = {"type": "format", "pattern": "red.*", "name": "starts_red"}


# ---- parity with TRL ----------------------------------------------------------------------------------
def _trl_trainer(model_path: str, tmp: Path, loss_type: str, scale_rewards: str, rewards: list[float], beta: float) -> Any:
    pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    queue = list(rewards)

    def fixed_reward(prompts: list, completions: list, **kw: Any) -> list[float]:
        out = queue[: len(completions)]
        del queue[: len(completions)]
        return out

    args = GRPOConfig(output_dir=str(tmp / "trl"), use_cpu=True, bf16=False, per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=5, loss_type=loss_type, scale_rewards=scale_rewards, beta=beta, report_to=[],
                      temperature=0.7, epsilon=0.2, epsilon_high=0.28)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    tok = AutoTokenizer.from_pretrained(model_path)
    ds = Dataset.from_list([{"prompt": "say one two"}] * 4)
    return GRPOTrainer(model=model, reward_funcs=fixed_reward, args=args, train_dataset=ds, processing_class=tok)


@pytest.mark.parametrize("loss_type,scale", [("grpo", "group"), ("dr_grpo", "none"), ("dapo", "batch"), ("bnpo", "group")])
def test_advantages_and_loss_equal_trl(llama: str, tmp_path: Path, loss_type: str, scale: str) -> None:
    """Same tiny Llama, prompts, completions and rewards: TRL's advantages (its _generate_and_score_completions
    with generation replaced by our completions) and its _compute_loss equal ours to 1e-5, the policy moved off
    the sampling one (old log-probs given) so that clipping and the KL term (beta 0.04) are exercised."""
    from hfadapt.tasks.online_rl import compute_advantages, policy_loss, token_logps

    rewards = [1.0, 0.0, 0.5, 0.0, 2.0, 1.0, 1.0, 3.0]  # two prompts x 4 completions
    trainer = _trl_trainer(llama, tmp_path, loss_type, scale, rewards, beta=0.04)
    g = torch.Generator().manual_seed(0)
    prompt_ids = [[6 + 11, 6 + 12, 6 + 13], [6 + 14, 6 + 15]]
    completions = [torch.randint(6, 29, (int(torch.randint(2, 6, (1,), generator=g)),), generator=g).tolist() for _ in range(8)]
    completions[0] = completions[0][:2] + [1]  # one ends with EOS
    prompt_list = [prompt_ids[0]] * 4 + [prompt_ids[1]] * 4
    trainer._generate = lambda prompts: (prompt_list, completions, None, ["x"] * 8, None, {}, None, None)  # noqa: ARG005
    inputs = [{"prompt": "say one two"}] * 8
    trainer.model.train()
    out = trainer._generate_and_score_completions(inputs)
    ours, _ = compute_advantages(torch.tensor(rewards), 4, "grpo", scale)
    assert torch.allclose(out["advantages"].float(), ours.float(), atol=1e-5), (out["advantages"], ours)

    # the loss: our per-token log-probs and loss against TRL's on the same inputs, old and reference log-probs given
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    with torch.no_grad():
        logps = token_logps(trainer.model, ids, mask, out["completion_ids"], 0.7)
    old = logps + 0.3 * torch.randn(logps.shape, generator=g)
    ref = logps + 0.2 * torch.randn(logps.shape, generator=g)
    out["old_per_token_logps"], out["ref_per_token_logps"] = old, ref
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train; one micro-batch here
    trl_loss = trainer._compute_loss(trainer.model, out)
    mine = token_logps(trainer.model, ids, mask, out["completion_ids"], 0.7)
    assert torch.allclose(mine.detach(), logps, atol=1e-6)
    loss, figures = policy_loss(mine, old, ref, out["advantages"], out["completion_mask"], loss_type, 0.2, 0.28, 0.04, 5,
                                out["num_items_in_batch"], 1)
    assert abs(loss.item() - trl_loss.item()) < 1e-5, (loss.item(), trl_loss.item())
    trl_grads = torch.autograd.grad(trl_loss, [p for p in trainer.model.parameters()][-1])[0]
    loss2, _ = policy_loss(token_logps(trainer.model, ids, mask, out["completion_ids"], 0.7), old, ref, out["advantages"],
                           out["completion_mask"], loss_type, 0.2, 0.28, 0.04, 5, out["num_items_in_batch"], 1)
    grads = torch.autograd.grad(loss2, [p for p in trainer.model.parameters()][-1])[0]
    assert torch.allclose(grads, trl_grads, atol=1e-5)
    assert 0 < figures["clip_ratio"] < 1


def test_rloo_advantage_is_reward_minus_mean_of_the_others() -> None:
    from hfadapt.tasks.online_rl import compute_advantages

    r = torch.tensor([1.0, 0.0, 0.0, 3.0, 1.0, 1.0])
    adv, _ = compute_advantages(r, 3, "rloo", "none")
    assert torch.allclose(adv, torch.tensor([1.0, -0.5, -0.5, 2.0, -1.0, -1.0]))


# ---- learning -------------------------------------------------------------------------------------------
def _learn(tmp: Path, llama: str, reward: dict[str, Any]) -> list[float]:
    recipe = rl_recipe(tmp, llama, {"temperature": 0.7, "rewards": [reward]}, max_steps=40, batch_size=8, scheduler="constant")
    result = train(recipe)
    return [h["train/reward"] for h in result.state.log_history if "train/reward" in h]


def test_learns_to_start_with_a_token_from_a_reward_function(llama: str, tmp_path: Path) -> None:
    """Reward 1 when the completion starts with 'red' (a function in a file next to the recipe): from about
    chance (1 in 29 tokens) to over 0.9 within 40 steps."""
    (tmp_path / "my_rewards.py").write_text("def starts_red(completion, answer):\n    return float(completion.split()[:1] == [answer])\n")
    curve = _learn(tmp_path, llama, {"type": "function", "function": "my_rewards.py:starts_red"})
    assert curve[0] < 0.2 and sum(curve[-10:]) / 10 > 0.9, curve
    import json

    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert len(info["reward_functions"]["my_rewards.py:starts_red"]) == 64  # its sha256
    rows = [json.loads(line) for line in (tmp_path / "run" / "completions.jsonl").read_text().splitlines()]
    assert {r["step"] for r in rows} == set(range(1, 41)) and len(rows) % 8 == 0  # every step, whole groups
    assert {"prompt", "completion", "reward", "rewards", "advantage"} <= set(rows[0])


def test_learns_a_format_regex(llama: str, tmp_path: Path) -> None:
    curve = _learn(tmp_path, llama, {"type": "format", "pattern": ".*\\bgreen\\b.*"})
    assert curve[0] < 0.4 and sum(curve[-10:]) / 10 > 0.9, curve


# ---- bad inputs, one line each ------------------------------------------------------------------------------
def _fails(tmp: Path, llama: str, rl: dict[str, Any], rows: list[dict[str, Any]] | None = None) -> str:
    with pytest.raises(HfadaptError) as info:
        train(rl_recipe(tmp, llama, rl, rows))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_reward_function_file_missing(llama: str, tmp_path: Path) -> None:
    msg = _fails(tmp_path, llama, {"rewards": [{"type": "function", "function": "nope.py:score"}]})
    assert "nope.py" in msg and "no file" in msg


def test_reward_function_name_missing_or_wrong_signature(llama: str, tmp_path: Path) -> None:
    (tmp_path / "r.py").write_text("def other(c):\n    return 0.0\n\ndef bad(*, completion):\n    return 0.0\n")
    assert "no function 'score'" in _fails(tmp_path, llama, {"rewards": [{"type": "function", "function": "r.py:score"}]})
    assert "wrong signature" in _fails(tmp_path, llama, {"rewards": [{"type": "function", "function": "r.py:bad"}]})


def test_reward_function_raising_names_row_and_completion(llama: str, tmp_path: Path) -> None:
    (tmp_path / "r.py").write_text("def score(completion, answer):\n    if completion.startswith('blue'):\n        raise ValueError('no blue')\n    return 0.0\n")
    msg = _fails(tmp_path, llama, {"temperature": 2.0, "rewards": [{"type": "function", "function": "r.py:score"}]})
    assert "train row" in msg and "completion" in msg and "ValueError: no blue" in msg


def test_num_generations_below_two(llama: str, tmp_path: Path) -> None:
    with pytest.raises(HfadaptError, match="rl.num_generations"):
        rl_recipe(tmp_path, llama, {"num_generations": 1, "rewards": [STARTS_RED]})


def test_reward_column_missing(llama: str, tmp_path: Path) -> None:
    msg = _fails(tmp_path, llama, {"rewards": [{"type": "exact_match", "column": "solution"}]})
    assert "rl.rewards[0].column" in msg and "'solution'" in msg


def test_vllm_refused_in_one_line(llama: str, tmp_path: Path) -> None:
    with pytest.raises(HfadaptError, match="rl.generation_engine"):
        rl_recipe(tmp_path, llama, {"generation_engine": "vllm", "rewards": [STARTS_RED]})


def test_hub_recipe_may_not_run_reward_code(llama: str, tmp_path: Path) -> None:
    (tmp_path / "r.py").write_text("def score(completion):\n    return 0.0\n")
    msg = _fails(tmp_path, llama, {"trust_reward_code": False, "rewards": [{"type": "function", "function": "r.py:score"}]})
    assert "rl.trust_reward_code" in msg


# ---- built-in rewards ------------------------------------------------------------------------------------------
def test_answer_extraction() -> None:
    from hfadapt.tasks.rewards import _math_equal, _reference, extract_answer

    assert extract_answer("so it is 1,234 apples, then 42.", "last_number") == "42"
    assert extract_answer("x = \\boxed{\\frac{1}{2}} done", "boxed") == "\\frac{1}{2}"
    assert _reference("Natalia sold 48/2 = 24 clips.\n#### 72", "last_number") == "72"
    assert _math_equal("the answer is \\boxed{0.5}", "\\frac{1}{2}") == 1.0
    assert _math_equal("the answer is \\boxed{3}", "2") == 0.0


def test_sampling_is_seeded_per_completion(llama: str) -> None:
    """A completion's tokens depend on (seed, step, row, index), not on the batch that drew it."""
    from transformers import AutoModelForCausalLM, LogitsProcessorList

    from hfadapt.tasks.online_rl import SeededSampler

    model = AutoModelForCausalLM.from_pretrained(llama).eval()
    ids = torch.tensor([[17, 18, 19], [17, 18, 19], [17, 18, 19]])
    def run(seeds: list[int], rows: Any) -> Any:
        return model.generate(input_ids=rows, attention_mask=torch.ones_like(rows), do_sample=False, max_new_tokens=6,
                              logits_processor=LogitsProcessorList([SeededSampler(seeds, 1.0, 1.0)]), pad_token_id=0)
    both, alone = run([5, 6, 7], ids), run([6], ids[:1])
    assert torch.equal(alone[0], both[1, : alone.shape[1]]) and not torch.equal(both[0], both[1])


# ---- guarantees -------------------------------------------------------------------------------------------------
def test_resume_after_a_kill_is_exact(llama: str, tmp_path: Path) -> None:
    """Killed after step 3 of 6 (the checkpoint is at 2, the generation for steps 3-4 already logged) and resumed:
    the same losses, figures, completions and adapter, bit for bit (the sampling of each completion is seeded from
    the step, row and index, both in the checkpointed state), and completions.jsonl holds each step once."""
    from tests.pairs_fixtures import resumed_equals_uninterrupted

    def recipe(name: str) -> Recipe:
        (tmp_path / name).mkdir(exist_ok=True)
        return rl_recipe(tmp_path / name, llama, {"num_iterations": 2, "rewards": [STARTS_RED, {"type": "length", "target": 2}]}, max_steps=6, save_steps=2,
                         batch_size=4)

    full, resumed = resumed_equals_uninterrupted(recipe, kill_at=3)
    read = lambda r: (r.output_dir / "completions.jsonl").read_text().splitlines()  # noqa: E731
    assert read(full) == read(resumed) and len(read(full)) == 3 * 4 * 8  # 3 generations of 4 prompts x 8


def test_resume_from_the_runs_own_recipe_finds_the_reward_file(llama: str, tmp_path: Path) -> None:
    """The reward file is copied into RUN/rewards/ when training starts: with the recipe's folder gone, resuming from
    RUN/recipe.yaml and `hfadapt eval RUN` run it from there, and run_info records its hash."""
    import hashlib
    import json
    import shutil

    from hfadapt import evaluate_run, load_recipe

    folder, run = tmp_path / "mine", tmp_path / "run"
    folder.mkdir()
    (folder / "r.py").write_text("def score(completion, answer):\n    return float(completion.startswith(answer))\n")
    recipe = rl_recipe(tmp_path, llama, {"num_generations": 2, "rewards": [{"type": "function", "function": "r.py:score"}]},
                       max_steps=3, save_steps=1, batch_size=2)
    recipe = Recipe.from_dict(recipe.to_dict(), source=folder / "recipe.yaml")  # data and run outside the recipe's folder

    class Killed(Exception):
        pass

    def kill(state: Any) -> None:
        if state.global_step == 2:
            raise Killed

    with pytest.raises(Killed):
        train(recipe, callbacks=[kill])
    shutil.rmtree(folder)
    train(load_recipe(run / "recipe.yaml"), resume=True)
    info = json.loads((run / "run_info.json").read_text())
    assert info["reward_functions"]["r.py:score"] == hashlib.sha256((run / "rewards" / "r.py").read_bytes()).hexdigest()
    assert "validation/reward" in evaluate_run(run)


def test_resume_drops_step_log_rows_past_the_checkpoint(tmp_path: Path) -> None:
    from hfadapt.rundir.layout import RunDir

    (tmp_path / "completions.jsonl").write_text('{"step": 1, "a": 0}\n{"step": 2}\n{"step": 3}\n{"step": 4, "comp')
    RunDir(tmp_path).drop_rows_after("completions.jsonl", 2)
    assert (tmp_path / "completions.jsonl").read_text() == '{"step": 1, "a": 0}\n{"step": 2}\n'
    RunDir(tmp_path).drop_rows_after("absent.jsonl", 2)  # nothing logged yet: nothing to do
    assert not (tmp_path / "absent.jsonl").exists()


@pytest.mark.slow
def test_two_processes_equal_one(llama: str, tmp_path: Path) -> None:
    """Two gloo processes on CPU (each samples and scores its own prompts; advantages within a group, batch std
    and dapo's token count across processes) against one process with the same global batch: per-step losses,
    rewards and figures (KL and clip ratio of the second update of each generation included), the adapter, the
    greedy evaluations, completions.jsonl and the prompt count agree.
    Prompts of different lengths, so the two layouts pad differently."""
    from tests.pairs_fixtures import GLOBAL_BATCH, STEPS, two_process_recipes, two_processes_equal_one

    rng = random.Random(3)
    rows = [{"prompt": "say " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))), "answer": "red"} for _ in range(64)]
    data = write_jsonl(tmp_path / "prompts.jsonl", rows)
    rl = {"num_generations": 4, "max_completion_length": 4, "temperature": 0.9, "scale_rewards": "batch", "num_iterations": 2, "beta": 0.04,
          "rewards": [STARTS_RED, {"type": "length", "target": 2, "weight": 0.5}]}
    one, two = two_process_recipes(tmp_path, "online-rl", llama, data, {"max_prompt_length": 16}, sections={"rl": rl})
    r1, r2 = two_processes_equal_one(tmp_path, one, two, figures="train/", units="prompts", loss_falls=False)
    for run in (r1, r2):
        assert run["perf"]["prompts"] == STEPS // 2 * GLOBAL_BATCH, run["perf"]  # 2 updates per generation
    c1, c2 = ((tmp_path / f"run-{n}" / "completions.jsonl").read_text() for n in ("one", "two"))
    assert c1 == c2 and c1.count("\n") == STEPS // 2 * GLOBAL_BATCH * 4
    assert any(h.get("train/clip_ratio", 0) > 0 for h in r1["state"]["log_history"])  # the second update clips


def test_pushed_run_carries_its_reward_file_which_runs_only_on_override(llama: str, tmp_path: Path, hub_server: Any,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`hfadapt push` uploads RUN/rewards/ and the card names each reward, its weight and the file's sha256; the pulled
    run refuses to run the file (one line naming it and its hash) until rl.trust_reward_code=true, then scores as the
    local run does."""
    import hashlib

    import yaml

    from hfadapt import evaluate_run
    from hfadapt.cli import main

    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    folder = tmp_path / "mine"
    folder.mkdir()
    code = b"def score(completion, answer):\n    return float(len(completion.split())) / 4\n"
    (folder / "r.py").write_bytes(code)
    sha = hashlib.sha256(code).hexdigest()
    recipe = rl_recipe(tmp_path, llama, {"num_generations": 2, "rewards": [
        {"type": "function", "function": f"{folder}/r.py:score", "weight": 0.5}, STARTS_RED]}, max_steps=2, batch_size=2)
    result = train(recipe)
    assert main(["push", str(result.output_dir), "test-user/rl-reward"]) == 0
    files = hub_server.files("test-user/rl-reward")
    assert files["rewards/r.py"] == code
    pushed = yaml.safe_load(files["recipe.yaml"])
    assert pushed["rl"]["rewards"][0]["function"] == "r.py:score"  # the author's folder is not published
    card = files["README.md"].decode()
    assert f"| score (function) | 0.5 | r.py:score | `{sha}` |" in card and str(folder) not in card
    assert str(folder).encode() not in files["run_info.json"]

    data = [f"data.train_files=[{tmp_path / 'prompts.jsonl'}]"]
    with pytest.raises(HfadaptError) as refused:
        evaluate_run("test-user/rl-reward", overrides=data, base_model=llama)
    msg = str(refused.value)
    assert "\n" not in msg and msg.startswith("rl.trust_reward_code:") and "rewards/r.py" in msg and sha in msg
    assert "override rl.trust_reward_code=true" in msg
    pulled = evaluate_run("test-user/rl-reward", overrides=[*data, "rl.trust_reward_code=true"], base_model=llama)
    local = evaluate_run(result.output_dir)
    assert pulled["validation/rewards/score"] == pytest.approx(local["validation/rewards/score"], abs=1e-6)
    assert pulled["validation/reward"] == pytest.approx(local["validation/reward"], abs=1e-6) and local["validation/rewards/score"] > 0


def test_num_iterations_with_accumulation_is_one_validate_line(capsys: pytest.CaptureFixture[str]) -> None:
    from hfadapt.cli import main

    assert main(["validate", "text/gsm8k-grpo-smollm2", "rl.num_iterations=2", "train.gradient_accumulation_steps=4"]) != 0
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "rl.num_iterations: 2 updates" in err and "train.gradient_accumulation_steps: 1 (got 4)" in err
    assert main(["validate", "text/gsm8k-grpo-smollm2", "rl.num_iterations=2", "train.gradient_accumulation_steps=1"]) == 0
