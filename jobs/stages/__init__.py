"""The cycle's stages, one module each (DESIGN.md's table), and the Badcase Killer's rules."""
