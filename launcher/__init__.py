"""Client-side launcher: runs the packaged trainer as a Vertex AI CustomJob (`make train BACKEND=vertex`).

Not part of the trainer distribution the job installs: it needs google-cloud-aiplatform, the job does not.
"""
