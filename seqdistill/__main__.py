from seqdistill.cli import main

main()
