"""Dialogs opened from the File menu: the learning-rate finder and the loss comparison."""
