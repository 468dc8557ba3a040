"""Tiny vision-language models of four families, saved like Hub repos (config + weights + processor +
tokenizer with a chat template), and a small image question-answering set.

Each family gets a word-level tokenizer holding its own image tokens as special tokens and the same
simple chat template, which renders image parts as the family's placeholder:

    <user> <image> what colour <eos> <assistant> red <eos>

The processor then expands the placeholder into the family's image tokens (Idefics3: a global-image
block of image_seq_len tokens; Qwen2-VL: one <|image_pad|> per merged patch; LLaVA: one per patch;
Gemma 3: mm_tokens_per_image soft tokens between <start_of_image> and <end_of_image>).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

WORDS = "what colour is the image say red green blue yellow black white one two a and picture left right".split()
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}
ROLES = ["<system>", "<user>", "<assistant>"]
BASE_SPECIAL = ["<pad>", "<eos>", "<unk>", *ROLES]

# family -> (image placeholder the template writes, the family's extra special tokens)
FAMILIES: dict[str, tuple[str, list[str]]] = {
    "idefics3": ("<image>", ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>",
                             *[f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]]),
    "qwen2_vl": ("<|vision_start|><|image_pad|><|vision_end|>", ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"]),
    "llava": ("<image>", ["<image>"]),
    "gemma3": ("<start_of_image>", ["<start_of_image>", "<image_soft_token>", "<end_of_image>"]),
}
# Gemma3Processor finds its image tokens as named attributes of the tokenizer
NAMED_TOKENS = {"gemma3": {"boi_token": "<start_of_image>", "image_token": "<image_soft_token>", "eoi_token": "<end_of_image>"}}


def chat_template(placeholder: str) -> str:
    return (
        "{% for m in messages %}<{{ m['role'] }}>{% if m['content'] is string %} {{ m['content'] }}{% else %}"
        "{% for p in m['content'] %}{% if p['type'] == 'image' %} " + placeholder + "{% elif p['type'] == 'text' %} {{ p['text'] }}"
        "{% endif %}{% endfor %}{% endif %} <eos> {% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    )


def tokenizer(family: str) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    placeholder, extra = FAMILIES[family]
    vocab = BASE_SPECIAL + extra + WORDS
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
        additional_special_tokens=ROLES + extra, model_max_length=512,
        **({"extra_special_tokens": NAMED_TOKENS[family]} if family in NAMED_TOKENS else {}),
    )
    tok.chat_template = chat_template(placeholder)
    return tok


def _text_config(vocab: int, **extra: Any) -> dict[str, Any]:
    return {
        "vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024,
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 1, "tie_word_embeddings": False,
        "initializer_range": 0.2, **extra,  # larger random features than 0.02: a tiny random base learns in a few steps
    }


def build(family: str, root: Path) -> str:
    """A tiny `family` model with random weights saved in `root`, like a Hub checkpoint."""
    import torch

    tok = tokenizer(family)
    n = len(tok)
    image_id = tok.convert_tokens_to_ids({"qwen2_vl": "<|image_pad|>", "gemma3": "<image_soft_token>"}.get(family, "<image>"))
    torch.manual_seed(0)
    if family == "idefics3":
        from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor, Idefics3Processor

        config = Idefics3Config(
            vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                           "image_size": 28, "patch_size": 14, "initializer_range": 0.2},
            text_config={"model_type": "llama", **_text_config(n)}, image_token_id=image_id, scale_factor=2, pad_token_id=0,
            initializer_range=0.2,
        )
        model = Idefics3ForConditionalGeneration(config)
        ip = Idefics3ImageProcessor(size={"longest_edge": 56}, max_image_size={"longest_edge": 28}, do_image_splitting=False)
        # image_seq_len = (28 / 14)^2 / scale_factor^2 = 1 token per 28-px tile
        processor = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=1, chat_template=tok.chat_template)
    elif family == "qwen2_vl":
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor, Qwen2VLProcessor

        config = Qwen2VLConfig(
            vision_config={"depth": 1, "embed_dim": 16, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2,
                           "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3, "initializer_range": 0.2},
            text_config=_text_config(n, rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]}, model_type="qwen2_vl_text"),
            image_token_id=image_id, video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
            vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"), pad_token_id=0, initializer_range=0.2,
        )
        model = Qwen2VLForConditionalGeneration(config)
        ip = Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=56 * 56, patch_size=14, merge_size=2, temporal_patch_size=2)
        from transformers import Qwen2VLVideoProcessor

        processor = Qwen2VLProcessor(image_processor=ip, tokenizer=tok, video_processor=Qwen2VLVideoProcessor(), chat_template=tok.chat_template)
    elif family == "llava":
        from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

        config = LlavaConfig(
            vision_config={"model_type": "clip_vision_model", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
                           "num_attention_heads": 2, "image_size": 28, "patch_size": 14, "projection_dim": 16, "initializer_range": 0.2},
            text_config={"model_type": "llama", **_text_config(n)}, image_token_id=image_id, vision_feature_layer=-1,
            vision_feature_select_strategy="default", pad_token_id=0,
        )
        model = LlavaForConditionalGeneration(config)
        ip = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
        processor = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                                   num_additional_image_tokens=1, chat_template=tok.chat_template)
    elif family == "gemma3":
        from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor

        config = Gemma3Config(
            vision_config={"model_type": "siglip_vision_model", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                           "num_attention_heads": 2, "image_size": 28, "patch_size": 14},
            text_config={"model_type": "gemma3_text", **_text_config(n), "head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 16,
                         "layer_types": ["sliding_attention", "full_attention"]},
            mm_tokens_per_image=1, boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
            eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"), image_token_index=image_id, initializer_range=0.2,
            tie_word_embeddings=False,
        )
        model = Gemma3ForConditionalGeneration(config)
        ip = Gemma3ImageProcessor(size={"height": 28, "width": 28})
        # 2x2 patches of 14 px average-pooled to mm_tokens_per_image = 1 soft token
        processor = Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=1, chat_template=tok.chat_template)
    else:
        raise ValueError(family)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 1
    model.save_pretrained(root)
    processor.save_pretrained(root)
    return str(root)


def image(colour: str, size: tuple[int, int] = (32, 32)) -> Any:
    from PIL import Image

    return Image.new("RGB", size, COLOURS[colour])


def write_colour_set(folder: Path, n: int = 8, two_images: bool = False) -> Path:
    """folder/images/*.png and folder/chat.jsonl: chat rows asking the colour of an image (paths relative to the file)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    rows = []
    for i in range(n):
        colour = names[i % len(names)]
        path = f"images/{colour}.png"
        image(colour).save(folder / path)
        rows.append({
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what colour"}]},
                {"role": "assistant", "content": [{"type": "text", "text": colour}]},
            ],
            "images": [path],
        })
    file = folder / "chat.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return file


@pytest.fixture(scope="session")
def tiny_idefics3(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build("idefics3", tmp_path_factory.mktemp("tiny-idefics3"))


@pytest.fixture(scope="session")
def tiny_qwen2_vl(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build("qwen2_vl", tmp_path_factory.mktemp("tiny-qwen2-vl"))


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build("llava", tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="session")
def tiny_gemma3(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build("gemma3", tmp_path_factory.mktemp("tiny-gemma3"))


@pytest.fixture(scope="session")
def colour_chat(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_colour_set(tmp_path_factory.mktemp("colour-chat")))
