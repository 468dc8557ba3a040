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
