from freshsales_destination.cli import main

main()
