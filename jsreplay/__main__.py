from jsreplay.cli import main

main()
