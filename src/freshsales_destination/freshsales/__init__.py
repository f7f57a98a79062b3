"""freshsales"""
