from pverep.cli import main

main()
