from turndiff.cli import main

main()
