"""`flashspark tune`: the best recipe settings for a declared workload, measured on fresh deployments."""
