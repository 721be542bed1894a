"""State-space model building blocks: HiPPO matrices, discretisation, kernels, scans."""
