"""The panels around the views: the start page and the training form."""
