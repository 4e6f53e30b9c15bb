"""streamclf model: email/text → tokens → LSTM → labels and scores.

Kept free of imports: ``model.email`` and ``model.data`` must load without torch.
"""

import warnings

# torch warns on import that it cannot find NumPy, which it only needs to exchange arrays; the
# worker never does. Without this, every command of a plain install starts with that warning.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy", category=UserWarning)
