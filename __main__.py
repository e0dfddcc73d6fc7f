from nocturna_infra.program import main

main()
