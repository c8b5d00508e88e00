"""The router: one OIP v2 front door that balances each request across replicas.

Transport-free cores (discovery, balancer, policies, forwarding, tensor
combining) sit beside thin gRPC adapters (`grpc_backends`, `servicer`).
"""
