"""Pictures for people: target/heatmap panels and prediction overlays."""
