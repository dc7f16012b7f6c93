from edgecv.cli.app import main

main()
