from nocturna_infra.program.stack import main

main()
