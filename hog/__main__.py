from hog.cli.group import main

main()
