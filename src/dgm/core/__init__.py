"""The book's mathematics, torch only: schedule, Normal toolkit, forward process, reverse kernel and
variances, parameterizations and the Denoiser, losses and bounds, the mixture oracle and its class-conditional
and guided forms, seeded draws."""
