"""streamclf model: email/text → tokens → LSTM → labels and scores.

Kept free of imports: ``model.email`` and ``model.data`` must load without torch.
"""
