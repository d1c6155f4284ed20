from kongtask.cli import main

main()
