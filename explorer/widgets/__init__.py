"""What the views share: jobs-free widgets, colours, framed thumbnails, texts, deferred loading."""
