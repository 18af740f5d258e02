"""mixpe.sw"""
