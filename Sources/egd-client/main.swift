print("egd-client: not built yet")
