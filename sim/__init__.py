"""mixpe.sim"""
