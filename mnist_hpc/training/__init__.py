"""Training: build the components (device, data, model, optimizer), run the loop, evaluate, infer."""
