"""Building block: datasets (Hub or local files), labels, audio decoding, packing, streaming and the
order rows are batched in. Imports the core and modeling (processors)."""
