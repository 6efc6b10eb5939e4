"""The live engine: the Engine (parts, warm-up) and its sessions, each a front over input, the stage
pipeline and output, paced on one timeline (docs/architecture.md); no network here."""
