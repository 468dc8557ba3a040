"""Building block: base models (Hub or local, transformers or timm), processors, adapters (peft),
sharding facts and meta-device stand-ins. Imports only the core."""
