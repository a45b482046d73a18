from happyhashtags.cli import main

main()
