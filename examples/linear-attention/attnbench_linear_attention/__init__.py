"""Linear attention with the elu+1 feature map (Katharopoulos et al. 2020) as an attnbench mechanism plug-in.

The package's entry point in the `attnbench.mechanisms` group names `attnbench_linear_attention.spec`, whose
`MECHANISMS` attnbench registers next to its built-in mechanisms. Importing this package itself imports nothing.
"""
