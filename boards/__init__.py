"""mixpe.boards"""
