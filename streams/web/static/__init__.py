"""Assets of the ops page (a package only so that they ship in the wheel)."""
