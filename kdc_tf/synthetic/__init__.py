"""Generated test and benchmark data: people drawn on an empty canvas (`scenes`)."""
