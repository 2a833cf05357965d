"""Faces: the Surrey Face Model as a differentiable module (model), landmarks (landmarks), Face2Face-style
tracking (tracking, `neuralrender faces track` in cli), Deep Video Portraits conditioning, reenactment transfer
and edits (conditioning). Submodules are imported explicitly; nothing optional is imported here."""
