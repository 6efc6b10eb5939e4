"""The body's keypoints and the pose tensor drawn from them: shared by the models, the engine and the
procedural data generator (which imports them; nothing here imports the generator)."""
