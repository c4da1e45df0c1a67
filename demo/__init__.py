"""CLIP attacks and defenses: the library behind the teaching app."""
