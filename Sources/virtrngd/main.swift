print("virtrngd")
