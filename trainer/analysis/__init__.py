"""Analysis of embeddings (arrays in, arrays out): distances, retrieval, verification, pairs, triplets, index, map."""
