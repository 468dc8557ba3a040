"""`hfadapt serve --engine vllm`: causal-lm generation on vLLM's multi-LoRA engine (CUDA GPU).

UNTESTED: no machine of this project has vLLM and a GPU; `check_engine` refuses the engine in one
line where either is missing, and that refusal is what the tests cover. The rest of the server is
unchanged: routes, batching, stop sequences and the answers' text go through the same code as with
the default engine; vLLM replaces `generate` for the batches of causal-lm base models (every
adapter of the base as a LoRARequest, one `LLM.generate` call per batch, the adapters mixed). The
transformers copy of each base stays loaded on the CPU (configs, tokenizers, other tasks). Tokens
reach a stream when the batch is done, not one by one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hfadapt.core.errors import HfadaptError, first_line
from hfadapt.serving.registry import GENERATIVE

if TYPE_CHECKING:
    from hfadapt.serving.batching import Job, Row
    from hfadapt.serving.registry import ModelGroup, Registry


class VllmGenerator:
    def __init__(self, registry: Registry) -> None:
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        self.engines: dict[int, Any] = {}
        self.loras: dict[str, Any] = {}
        for group in registry.groups:
            served = [s for s in registry.adapters() if s.group is group]
            if not served or GENERATIVE.get(served[0].task) != "causal" or not group.peft or not group.mixable:
                continue
            ranks = [group.model.peft_config[s.peft_name].r for s in served if s.peft_name]
            try:
                self.engines[id(group)] = LLM(model=group.base_ref, revision=group.revision, enable_lora=True,
                                              max_loras=max(1, len(ranks)), max_lora_rank=max(ranks or [8]),
                                              trust_remote_code=False, tokenizer=served[0].folder)
            except Exception as e:  # noqa: BLE001 - vLLM's own errors (model type, memory): one line
                raise HfadaptError(f"serve --engine vllm: vLLM could not load {group.base_ref}: {first_line(e)}") from None
            for s in served:
                if s.peft_name:  # vLLM numbers LoRA adapters from 1
                    self.loras[s.name] = LoRARequest(s.name, len(self.loras) + 1, s.folder)

    def handles(self, group: ModelGroup) -> bool:
        return id(group) in self.engines

    def generate(self, jobs: list[Job], rows: list[Row]) -> None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        llm = self.engines[id(jobs[0].served.group)]
        params = [SamplingParams(max_tokens=j.params.max_tokens, temperature=j.params.temperature if j.params.do_sample else 0.0,
                                 top_p=j.params.top_p if j.params.do_sample else 1.0, seed=j.params.seed) for j in jobs]
        outputs = llm.generate([TokensPrompt(prompt_token_ids=j.prompt_ids) for j in jobs], params,
                               lora_request=[self.loras.get(j.served.name) for j in jobs], use_tqdm=False)
        for row, out in zip(rows, outputs):
            for token in out.outputs[0].token_ids:
                row.push(int(token))
