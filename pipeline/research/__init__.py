"""Research on scaling itself: the α, β, γ grid search and the per-dimension study (deploy grid, study)."""
