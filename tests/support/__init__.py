"""What the tests share and test nothing themselves: apps, fake servers, process launchers, a clock."""
