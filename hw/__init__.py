"""mixpe.hw"""
