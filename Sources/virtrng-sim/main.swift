print("virtrng-sim")
