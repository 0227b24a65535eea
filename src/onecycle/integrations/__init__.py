"""Optional integrations with other tools, one module each, imported explicitly
(``from onecycle.integrations.tensorboard import TensorBoardLogger``): importing this package imports
none of them, and none of their third-party packages."""
