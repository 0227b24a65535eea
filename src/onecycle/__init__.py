"""onecycle: super-convergence made practical."""
