"""Data: the folder scan, decoding images, samples and the class-disjoint split, the C x K loader, the demo."""
